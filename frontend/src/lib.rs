//! The hydrate entry point: cargo-leptos builds this crate to WASM, and the page's
//! script calls [`hydrate`] to attach the reactive app to the server-rendered HTML.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_lazy(usher_app::App);
}
