//! `tower-bedrock-budget-redis`: the TokenBudget shared by many processes
//! through Redis.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod driver;
pub mod error;
pub mod names;
mod scripts;
mod store;

pub use config::{RedisStoreBuilder, TimeSource};
pub use error::BuildError;
pub use store::{RedisKey, RedisStore, ReserveFuture};
