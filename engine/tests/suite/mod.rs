mod bad_input;
mod common;
mod lifecycle;
mod model;
mod stress;
