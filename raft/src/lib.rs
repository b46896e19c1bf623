//! Sans-IO multi-Raft.
