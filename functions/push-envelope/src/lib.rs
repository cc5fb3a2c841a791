//! What every push function does first and last: decode a Pub/Sub push request ([`envelope`], wrapped
//! and unwrapped) and, for a message that can never become rows, build its [`dead_letter`] row;
//! [`steps`] strings them together for functions that call their imports synchronously, and [`glue`]
//! writes the conversions between a function's generated bindings and the model.

pub mod dead_letter;
pub mod envelope;
pub mod glue;
pub mod settings;
pub mod steps;
