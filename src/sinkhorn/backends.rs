//! The backends otpref supports: each needs [`OtBackend`], whose default method fits any
//! backend without autodiff. To support another backend, add one line here behind its feature.

use super::implicit::OtBackend;

#[cfg(feature = "flex")]
impl OtBackend for burn::backend::Flex {}

#[cfg(feature = "cuda")]
impl OtBackend for burn::backend::Cuda {}
