mod bad_input;
mod batch;
mod common;
mod lifecycle;
mod liveness;
mod model;
mod query;
mod stress;
