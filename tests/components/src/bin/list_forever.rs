//! Tests a task that keeps the host busy without end: lists store `data`
//! from the start, one object per page, over and over, forever. Only a
//! run limit (timeout, fuel) stops it.

use caisson_sdk::Result;
use caisson_sdk::objects::Store;

#[caisson_sdk::task]
fn run() -> Result<()> {
    let store = Store::open("data")?;
    loop {
        for page in store.list_pages("").page_size(1) {
            std::hint::black_box(page?);
        }
    }
}

fn main() {}
