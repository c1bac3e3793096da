//! The behavioural suite against a store whose reservations answer
//! asynchronously (on their second poll), as a remote store's would.

tower_bedrock_budget::budget_store_tests!(tower_bedrock_budget::testing::YieldingStore::new(
    tower_bedrock_budget::InMemoryStore::new()
));
