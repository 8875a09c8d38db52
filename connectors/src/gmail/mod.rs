//! gmail connector: being written.
