pub mod raft;
