//! The commands beside `tributary up`: the demo, the benchmark, bulk loads, SQL. They use the host library like
//! any other client; none of them is part of it.

pub mod bench;
pub mod demo;
pub mod load;
pub mod sql;
