package ui_test

import (
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// doc is a parsed page.
type doc struct {
	t    *testing.T
	root *html.Node
}

func parse(t *testing.T, body string) doc {
	t.Helper()
	root, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return doc{t: t, root: root}
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

// all returns the elements for which match holds, in document order.
func (d doc) all(match func(n *html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(d.root)
	return out
}

// id returns the element with id, or nil.
func (d doc) id(id string) *html.Node {
	found := d.all(func(n *html.Node) bool { v, _ := attr(n, "id"); return v == id })
	if len(found) == 0 {
		return nil
	}
	return found[0]
}

// values returns the values of attribute key on every element that has it.
func (d doc) values(key string) []string {
	var out []string
	for _, n := range d.all(func(n *html.Node) bool { _, ok := attr(n, key); return ok }) {
		v, _ := attr(n, key)
		out = append(out, v)
	}
	return out
}

// class returns the elements of tag (any: "") with class c.
func (d doc) class(tag, c string) []*html.Node {
	return d.all(func(n *html.Node) bool {
		v, _ := attr(n, "class")
		return (tag == "" || n.Data == tag) && strings.Contains(" "+v+" ", " "+c+" ")
	})
}

func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.TrimSpace(b.String())
}

// csrfOf is the csrf field of the page's first form.
func csrfOf(t *testing.T, body string) string {
	t.Helper()
	for _, n := range parse(t, body).all(func(n *html.Node) bool { v, _ := attr(n, "name"); return n.Data == "input" && v == "csrf" }) {
		v, _ := attr(n, "value")
		return v
	}
	t.Fatalf("no csrf field in\n%s", body)
	return ""
}

type nodeT = html.Node
