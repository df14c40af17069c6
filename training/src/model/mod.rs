//! The network: what is exported ([`network`]), the burn autoencoder that
//! learns it ([`autoencoder`]) and the training loop ([`train`]).

pub mod autoencoder;
pub mod network;
pub mod train;
