"""HTTP upstream providers: the shared client, error translation and answer parsing, and one
module per upstream kind."""
