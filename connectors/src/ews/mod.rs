//! ews connector: being written.
