//! The queue topology, the job envelope and the publisher. This module alone
//! knows the AMQP names and the wire format; services speak in [`Route`]s and
//! [`JobEnvelope`]s.

mod envelope;
mod publisher;
mod topology;

pub use envelope::{AdminAction, ENVELOPE_VERSION, EnvelopeError, JobEnvelope, JobKind};
pub use publisher::{PublishError, Publisher, connect};
pub use topology::{DeadLetter, RETRY_TIERS, Route, Topology};
