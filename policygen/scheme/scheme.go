// Package scheme builds the runtime.Scheme policygen's clients use: the built-in types and podwall's.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"podwall.io/podwall/api/v1alpha1"
)

// New returns a scheme with the built-in types and podwall.io/v1alpha1.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err) // static registration: cannot fail
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
