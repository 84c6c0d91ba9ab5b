//! Event filters: a verdict per subscription group, then a decision per
//! event for the groups that need one.

use crate::{Decision, Event, Subscription, Verdict};

/// An event filter. The host calls [`EventFilter::prepare`] once per group
/// and [`EventFilter::decide`] once per event per group whose verdict was
/// [`Verdict::PerEvent`]; all those groups travel in one call, so the data is
/// parsed once per event.
pub trait EventFilter {
    /// Looks at a group once, when it forms. The default asks to decide
    /// every event with all of its data.
    fn prepare(group: &Subscription) -> Verdict {
        let _ = group;
        Verdict::PerEvent(None)
    }

    /// Decides about one event for one group.
    fn decide(event: &Event, group: &Subscription) -> Decision;
}

/// Exports a type implementing [`EventFilter`] as the plugin's filter.
#[macro_export]
macro_rules! export_filter {
    ($ty:ty) => {
        const _: () = {
            struct __FanwireFilter;
            impl $crate::wit::exports::fanwire::plugin::filter::Guest for __FanwireFilter {
                fn prepare(
                    group: $crate::wit::types::Subscription,
                ) -> $crate::wit::exports::fanwire::plugin::filter::Verdict {
                    $crate::filter::__prepare::<$ty>(group)
                }
                fn decide(
                    event: $crate::wit::types::Event,
                    groups: ::std::vec::Vec<$crate::wit::types::Subscription>,
                ) -> ::std::vec::Vec<$crate::wit::exports::fanwire::plugin::filter::Decision>
                {
                    $crate::filter::__decide::<$ty>(event, groups)
                }
            }
    $crate::wit::__export_world!(__FanwireFilter with_types_in $crate::wit);
        };
    };
}

/// A filter that is one function: `fn decide(event: &Event, group: &Subscription) -> Decision`.
/// Every group is decided per event with all of the data; implement
/// [`EventFilter`] and use [`export_filter!`] to also write `prepare`.
#[macro_export]
macro_rules! filter {
    ($(#[$meta:meta])* fn $name:ident($event:ident: &$ety:ty, $group:ident: &$gty:ty) -> $dty:ty $body:block) => {
        $(#[$meta])*
        fn $name($event: &$ety, $group: &$gty) -> $dty $body
        struct __FanwireOneFunctionFilter;
        impl $crate::EventFilter for __FanwireOneFunctionFilter {
            fn decide(event: &$crate::Event, group: &$crate::Subscription) -> $crate::Decision {
                $name(event, group)
            }
        }
        $crate::export_filter!(__FanwireOneFunctionFilter);
    };
}

#[cfg(feature = "event-filter")]
mod glue {
    use super::*;
    use crate::wit::exports::fanwire::plugin::filter as w;
    use crate::wit::types as t;

    #[doc(hidden)]
    pub fn __prepare<F: EventFilter>(group: t::Subscription) -> w::Verdict {
        match F::prepare(&group.into()) {
            Verdict::AllowAll => w::Verdict::AllowAll,
            Verdict::DenyAll(reason) => w::Verdict::DenyAll(reason),
            Verdict::PerEvent(fields) => w::Verdict::PerEvent(fields),
        }
    }

    #[doc(hidden)]
    pub fn __decide<F: EventFilter>(
        event: t::Event,
        groups: Vec<t::Subscription>,
    ) -> Vec<w::Decision> {
        let event: Event = event.into();
        groups
            .into_iter()
            .map(|group| match F::decide(&event, &group.into()) {
                Decision::Allow => w::Decision::Allow,
                Decision::Deny(reason) => w::Decision::Deny(reason),
                Decision::Redact(paths) => w::Decision::Redact(paths),
                Decision::Replace(value) => w::Decision::Replace(value.to_string()),
            })
            .collect()
    }
}

#[cfg(feature = "event-filter")]
pub use glue::{__decide, __prepare};
