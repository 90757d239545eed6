//! The tunnel's gRPC codec: prost, with small starting buffers.
//!
//! tonic gives every call an 8 KiB buffer each way from the start. A relay
//! holds thousands of calls that carry little or nothing for long stretches
//! (control streams, standby calls), so each starts at [`START_BYTES`] and
//! grows only when a frame needs it; bodies still stream in 64 KiB chunks.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Where each call's encode and decode buffers start.
pub const START_BYTES: usize = 1024;

/// How much an encoder gathers before it hands bytes to HTTP/2 (tonic's
/// default).
const YIELD_BYTES: usize = 32 * 1024;

pub struct TunnelCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for TunnelCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(START_BYTES, YIELD_BYTES)
}

impl<T, U> Codec for TunnelCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
