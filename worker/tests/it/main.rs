//! The worker through the real PostgreSQL and RabbitMQ.

#![allow(clippy::unwrap_used)]

mod admin;
mod lifecycle;
mod priority;
mod sessions;
mod support;
mod sync;
