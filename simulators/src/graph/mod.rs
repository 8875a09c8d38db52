//! graph simulator: being written.
