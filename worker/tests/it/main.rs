//! The worker through the real PostgreSQL and RabbitMQ.

#![allow(clippy::unwrap_used)]

mod admin;
mod lifecycle;
mod outbox;
mod priority;
mod push;
mod sessions;
mod support;
mod sync;
