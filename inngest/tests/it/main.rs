//! Integration tests: one binary, one module per concern.

mod events;
mod execution;
mod helpers;
mod introspection;
mod registration;
mod signature;
mod sync;
