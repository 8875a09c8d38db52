//! graph connector: being written.
