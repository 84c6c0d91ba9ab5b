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

/// A field resolver. The host calls [`FieldResolver::prepare`] once per
/// subscription group (again after a reload), then
/// [`FieldResolver::resolve`] once per group per event, in event order for
/// each group, with the context `prepare` returned; the value is then
/// projected through each subscriber's selection.
pub trait FieldResolver {
    /// What `resolve` needs of the group (an argument's value, the subject,
    /// JSON when several): it crosses the boundary with every event, so keep
    /// it to what `resolve` reads. By default nothing (an empty context). An
    /// error is the group's field error for that event, and `prepare` is
    /// asked again at the group's next event.
    fn prepare(call: &FieldCall) -> Result<String, GraphQLError> {
        let _ = call;
        Ok(String::new())
    }

    /// The field's value for this event (an object for a field of object
    /// type, [`Value::Null`] for none), or the error its subscribers
    /// receive at the field's path (with `extensions.code`
    /// `RESOLVER_FAILED` unless the error names one). `context` is what
    /// this group's `prepare` returned.
    fn resolve(event: &Event, context: &str) -> Result<Value, GraphQLError>;
}

/// Exports a type implementing [`FieldResolver`] as the plugin's resolver.
#[macro_export]
macro_rules! export_resolver {
    ($ty:ty) => {
        const _: () = {
            struct __FanwireResolver;
            impl $crate::wit::exports::fanwire::plugin::resolver::Guest for __FanwireResolver {
                fn prepare(
                    call: $crate::wit::exports::fanwire::plugin::resolver::FieldCall,
                ) -> ::std::result::Result<::std::string::String, $crate::wit::types::GraphqlError>
                {
                    $crate::resolver::__prepare::<$ty>(call)
                }

                fn resolve(
                    event: $crate::wit::types::Event,
                    context: ::std::string::String,
                ) -> ::std::result::Result<::std::string::String, $crate::wit::types::GraphqlError>
                {
                    $crate::resolver::__resolve::<$ty>(event, &context)
                }
            }
    $crate::wit::__export_world!(__FanwireResolver with_types_in $crate::wit);
        };
    };
}

/// A resolver that is one function, `fn resolve(event: &Event, context:
/// &str) -> Result<Value, GraphQLError>`, exported as the plugin's resolver,
/// optionally preceded by its `fn prepare(call: &FieldCall) ->
/// Result<String, GraphQLError>` (without one the context is empty).
#[macro_export]
macro_rules! resolver {
    (
        $(#[$pmeta:meta])* fn $prepare:ident($call:ident: &$cty:ty) -> $prty:ty $pbody:block
        $(#[$meta:meta])* fn $name:ident($event:ident: &$ety:ty, $context:ident: &$xty:ty) -> $rty:ty $body:block
    ) => {
        $(#[$pmeta])*
        fn $prepare($call: &$cty) -> $prty $pbody
        $(#[$meta])*
        fn $name($event: &$ety, $context: &$xty) -> $rty $body
        struct __FanwireOneFunctionResolver;
        impl $crate::FieldResolver for __FanwireOneFunctionResolver {
            fn prepare(
                call: &$crate::FieldCall,
            ) -> ::std::result::Result<::std::string::String, $crate::GraphQLError> {
                $prepare(call)
            }
            fn resolve(
                event: &$crate::Event,
                context: &str,
            ) -> ::std::result::Result<$crate::Value, $crate::GraphQLError> {
                $name(event, context)
            }
        }
        $crate::export_resolver!(__FanwireOneFunctionResolver);
    };
    ($(#[$meta:meta])* fn $name:ident($event:ident: &$ety:ty, $context:ident: &$xty:ty) -> $rty:ty $body:block) => {
        $(#[$meta])*
        fn $name($event: &$ety, $context: &$xty) -> $rty $body
        struct __FanwireOneFunctionResolver;
        impl $crate::FieldResolver for __FanwireOneFunctionResolver {
            fn resolve(
                event: &$crate::Event,
                context: &str,
            ) -> ::std::result::Result<$crate::Value, $crate::GraphQLError> {
                $name(event, context)
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
    pub fn __prepare<R: FieldResolver>(call: w::FieldCall) -> Result<String, t::GraphqlError> {
        R::prepare(&call.into()).map_err(Into::into)
    }

    #[doc(hidden)]
    pub fn __resolve<R: FieldResolver>(
        event: t::Event,
        context: &str,
    ) -> Result<String, t::GraphqlError> {
        R::resolve(&event.into(), context)
            .map(|v| v.to_string())
            .map_err(Into::into)
    }
}

#[cfg(feature = "field-resolver")]
pub use glue::{__prepare, __resolve};
