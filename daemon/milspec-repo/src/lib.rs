//! `milspec-repo`'s command line, for the binary and for the generated
//! manual page and completions (`milspec-docgen`).

pub mod cli;
