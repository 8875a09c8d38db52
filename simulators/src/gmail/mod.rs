//! gmail simulator: being written.
