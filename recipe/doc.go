// Package recipe will hold the recipe schema: strict YAML decoding with
// file:line errors, defaults, validation and variables. Not implemented yet
// (issue #4); the resolve/fetch subcommands of issue #3 start it.
package recipe
