// The release link reads src/text-order.txt (the Makefile's --symbol-ordering-file): relink the
// binary when `make text-order` rewrites it.
fn main() {
    println!("cargo:rerun-if-changed=src/text-order.txt");
}
