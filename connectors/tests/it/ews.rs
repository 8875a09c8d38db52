//! ews connector against its simulator: being written.
