//! Reactors: one thread per core, each owning its listener and connections.
