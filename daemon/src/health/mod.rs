//! Health of the loaded module: what "healthy" means and how it is watched.
