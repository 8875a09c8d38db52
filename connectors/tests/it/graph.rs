//! graph connector against its simulator: being written.
