//! Where readings come from. One folder per protocol: `mqtt/` (connection
//! options, acknowledgements, payload decoders). A Sparkplug B decoder
//! would sit beside the JSON one in `mqtt/decode`.

pub mod mqtt;
