//! Work in progress: the Redis-backed budget store.
