pub mod disk;
pub mod kv;
pub mod raft;
pub mod storage;
pub mod wire;
