// Package yamlnode holds what the YAML decoders of dmonitor.yaml and of
// rules.d share for their error messages.
package yamlnode

import "go.yaml.in/yaml/v3"

// Describe names what kind of value n is, for messages such as "want a
// list of strings, got a mapping".
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!null":
		return "nothing"
	}
	return "a string"
}
