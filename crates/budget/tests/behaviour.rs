//! The behavioural suite (see `tower_bedrock_budget::testing`) against the
//! in-memory store.

tower_bedrock_budget::budget_store_tests!(tower_bedrock_budget::InMemoryStore::new());
