//! How a page's data travels from the server's render to the browser. A page loads its
//! data with a server function; the server renders the page with it and writes it into
//! the HTML as JSON, and the hydrating page reads it from there instead of asking again.
//! Server functions decode their answers from bytes; Leptos's default for the embedded
//! copy decodes from a string, and serde_json compiles a separate decoder of every type
//! for each, so every page type was in the WASM twice. Here the embedded copy is
//! decoded from bytes too.

use leptos::prelude::*;
use leptos::server::codee::{Decoder, Encoder};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// JSON, decoded the way server functions decode theirs.
pub struct PageJson;

impl<T: Serialize> Encoder<T> for PageJson {
    type Error = serde_json::Error;
    type Encoded = String;

    fn encode(value: &T) -> Result<String, serde_json::Error> {
        serde_json::to_string(value)
    }
}

impl<T: DeserializeOwned> Decoder<T> for PageJson {
    type Error = serde_json::Error;
    type Encoded = str;

    fn decode(json: &str) -> Result<T, serde_json::Error> {
        serde_json::from_slice(json.as_bytes())
    }
}

/// A page's data, loaded again whenever `source` changes.
pub type PageData<T> = Resource<T, PageJson>;

/// [`Resource::new`] with [`PageJson`].
#[track_caller]
pub fn page_data<S, T, Fut>(
    source: impl Fn() -> S + Send + Sync + 'static,
    fetcher: impl Fn(S) -> Fut + Send + Sync + 'static,
) -> PageData<T>
where
    S: Send + Sync + Clone + PartialEq + 'static,
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    Resource::new_with_options(source, fetcher, false)
}
