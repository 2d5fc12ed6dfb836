//! Fault injection, operation histories and checkers that judge them.
//!
//! Not built yet: issue [jepsen] fills this crate.
