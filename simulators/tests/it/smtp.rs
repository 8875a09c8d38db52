//! SMTP simulator: being written.
