fn main() {
    std::process::exit(optx::cli::main());
}
