//! The commands beside `tributary up`: the demo, the benchmark, bulk loads and replays, SQL. They use the host library like
//! any other client; none of them is part of it.

pub mod bench;
pub mod demo;
pub mod load;
pub mod replay;
pub mod sql;
