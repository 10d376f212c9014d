"""One thin module per subcommand: parse options, call the library, write output."""
