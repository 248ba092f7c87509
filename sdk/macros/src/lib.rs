//! Procedural macros for `caisson-sdk`; use them through its re-exports.
//!
//! ```ignore
//! #[caisson_sdk::task]
//! fn run(input: String) -> caisson_sdk::Result<String> {
//!     Ok(input.to_uppercase())
//! }
//! ```

use proc_macro::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, parse_macro_input};

/// Marks a function as the task's entry point.
///
/// The function takes zero or one argument, of any type implementing
/// `caisson_sdk::FromInput`, and returns `Result<O, E>` where `O` implements
/// `caisson_sdk::IntoOutput` and `E` converts into `caisson_sdk::Error`. It
/// may have any name. The macro keeps the function as it is and adds a
/// hidden type implementing the generated `Guest` trait, exported as the
/// component's `run`; there may be one per component.
///
/// In a binary crate, keep an empty `fn main() {}`: the component is run
/// through `run`, never `main`.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new(attr.span(), "#[caisson_sdk::task] takes no arguments")
            .to_compile_error()
            .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    match expand(&func) {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#func #e).into()
        }
    }
}

fn expand(func: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(a.span(), "a task function cannot be async"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a task function cannot be generic",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new(
            v.span(),
            "a task function cannot be variadic",
        ));
    }
    if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
        return Err(syn::Error::new(
            r.span(),
            "a task function cannot take `self`",
        ));
    }
    if sig.inputs.len() > 1 {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "a task function takes at most one argument, its input",
        ));
    }

    let name = &sig.ident;
    let runner = if sig.inputs.is_empty() {
        quote!(run_no_input)
    } else {
        quote!(run)
    };
    let rt = quote!(::caisson_sdk::__private);
    // Span the generated call at the function's name, so a type error in its
    // input or output type points there.
    let call = quote_spanned!(name.span()=> #rt::#runner(input, #name));
    Ok(quote! {
        #func

        #[doc(hidden)]
        struct __CaissonTask;

        impl #rt::wit::Guest for __CaissonTask {
            fn run(
                input: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, #rt::wit::TaskError> {
                #call
            }
        }

        #rt::wit::export!(__CaissonTask with_types_in #rt::wit);
    })
}
