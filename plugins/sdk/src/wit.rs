//! The generated bindings of the plugin's world, chosen by feature. Plugin
//! authors use the wrappers of the crate root instead.

#[cfg(feature = "event-filter")]
wit_bindgen::generate!({
    path: "../../wit/v0.4.0",
    world: "event-filter",
    pub_export_macro: true,
    export_macro_name: "__export_world",
    default_bindings_module: "fanwire_sdk::wit",
});

#[cfg(feature = "subscription-policy")]
wit_bindgen::generate!({
    path: "../../wit/v0.4.0",
    world: "subscription-policy",
    pub_export_macro: true,
    export_macro_name: "__export_world",
    default_bindings_module: "fanwire_sdk::wit",
});

#[cfg(feature = "connection-policy")]
wit_bindgen::generate!({
    path: "../../wit/v0.4.0",
    world: "connection-policy",
    pub_export_macro: true,
    export_macro_name: "__export_world",
    default_bindings_module: "fanwire_sdk::wit",
});

#[cfg(feature = "transport-adapter")]
wit_bindgen::generate!({
    path: "../../wit/v0.4.0",
    world: "transport-adapter",
    pub_export_macro: true,
    export_macro_name: "__export_world",
    default_bindings_module: "fanwire_sdk::wit",
});

#[cfg(feature = "field-resolver")]
wit_bindgen::generate!({
    path: "../../wit/v0.4.0",
    world: "field-resolver",
    pub_export_macro: true,
    export_macro_name: "__export_world",
    default_bindings_module: "fanwire_sdk::wit",
});

/// Without a world feature (e.g. `cargo doc` of the SDK alone) the shared
/// types still exist, so the wrappers compile.
#[cfg(not(any(
    feature = "event-filter",
    feature = "subscription-policy",
    feature = "connection-policy",
    feature = "transport-adapter",
    feature = "field-resolver"
)))]
wit_bindgen::generate!({
    path: "../../wit/v0.4.0",
    inline: "package fanwire:sdk-docs; world docs { import fanwire:plugin/host@0.4.0; import fanwire:plugin/types@0.4.0; }",
});

pub use fanwire::plugin::{host, types};
