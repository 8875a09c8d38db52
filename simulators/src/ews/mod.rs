//! ews simulator: being written.
