//! gmail connector against its simulator: being written.
