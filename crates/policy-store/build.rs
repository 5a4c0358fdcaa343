// `refinery::embed_migrations!` reads ../../migrations at compile time; rebuild when it changes
// (a new file is otherwise not noticed).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
