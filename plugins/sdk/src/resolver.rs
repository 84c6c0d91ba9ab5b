//! Field resolvers: a subscription field's value computed from each event,
//! once per subscription group (never per client).

use crate::{Event, GraphQLError, Principal, Value};

/// What one group of subscriptions asks of the field: everything the
/// subscribers of the group agree on.
#[derive(Debug, Default)]
pub struct FieldCall {
    /// The root subscription field the resolver is bound to, e.g. `tick`.
    pub field: String,
    /// The field's coerced arguments (a JSON object).
    pub arguments: Value,
    /// The operation's coerced variables (a JSON object).
    pub variables: Value,
    /// Who subscribed.
    pub principal: Principal,
}

impl FieldCall {
    /// One argument of the field; `None` when absent or `null`.
    pub fn argument(&self, name: &str) -> Option<&Value> {
        self.arguments.get(name).filter(|v| !v.is_null())
    }
}

/// A field resolver. The host calls [`FieldResolver::resolve`] once per
/// subscription group per event, in event order for each group; the value
/// is then projected through each subscriber's selection.
pub trait FieldResolver {
    /// The field's value for this event (an object for a field of object
    /// type, [`Value::Null`] for none), or the error its subscribers
    /// receive at the field's path (with `extensions.code`
    /// `RESOLVER_FAILED` unless the error names one).
    fn resolve(event: &Event, call: &FieldCall) -> Result<Value, GraphQLError>;
}

/// Exports a type implementing [`FieldResolver`] as the plugin's resolver.
#[macro_export]
macro_rules! export_resolver {
    ($ty:ty) => {
        const _: () = {
            struct __FanwireResolver;
            impl $crate::wit::exports::fanwire::plugin::resolver::Guest for __FanwireResolver {
                fn resolve(
                    event: $crate::wit::types::Event,
                    call: $crate::wit::exports::fanwire::plugin::resolver::FieldCall,
                ) -> ::std::result::Result<::std::string::String, $crate::wit::types::GraphqlError>
                {
                    $crate::resolver::__resolve::<$ty>(event, call)
                }
            }
    $crate::wit::__export_world!(__FanwireResolver with_types_in $crate::wit);
        };
    };
}

/// A resolver that is one function: `fn resolve(event: &Event, call:
/// &FieldCall) -> Result<Value, GraphQLError>`, exported as the plugin's
/// resolver.
#[macro_export]
macro_rules! resolver {
    ($(#[$meta:meta])* fn $name:ident($event:ident: &$ety:ty, $call:ident: &$cty:ty) -> $rty:ty $body:block) => {
        $(#[$meta])*
        fn $name($event: &$ety, $call: &$cty) -> $rty $body
        struct __FanwireOneFunctionResolver;
        impl $crate::FieldResolver for __FanwireOneFunctionResolver {
            fn resolve(
                event: &$crate::Event,
                call: &$crate::FieldCall,
            ) -> ::std::result::Result<$crate::Value, $crate::GraphQLError> {
                $name(event, call)
            }
        }
        $crate::export_resolver!(__FanwireOneFunctionResolver);
    };
}

#[cfg(feature = "field-resolver")]
mod glue {
    use super::*;
    use crate::wit::exports::fanwire::plugin::resolver as w;
    use crate::wit::types as t;

    /// JSON text from the host; anything that does not parse reads as `null`.
    fn value(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or(Value::Null)
    }

    impl From<w::FieldCall> for FieldCall {
        fn from(c: w::FieldCall) -> Self {
            FieldCall {
                field: c.field,
                arguments: value(&c.arguments),
                variables: value(&c.variables),
                principal: c.principal.into(),
            }
        }
    }

    #[doc(hidden)]
    pub fn __resolve<R: FieldResolver>(
        event: t::Event,
        call: w::FieldCall,
    ) -> Result<String, t::GraphqlError> {
        R::resolve(&event.into(), &call.into())
            .map(|v| v.to_string())
            .map_err(Into::into)
    }
}

#[cfg(feature = "field-resolver")]
pub use glue::__resolve;
