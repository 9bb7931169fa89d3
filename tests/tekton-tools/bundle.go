package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/resolution/resolver/bundle"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"
)

// bundleObject is one Tekton object of a bundle file, checked by Tekton's own validation.
type bundleObject struct {
	apiVersion string
	kind       string
	name       string
	yaml       []byte
}

// readBundleFile splits a multi-document YAML file into Tekton objects (Pipeline, Task), each
// decoded strictly into Tekton's v1 types, defaulted and validated, so a mistake in a bundle kept
// in the repository fails here rather than as a resolution error in a test.
func readBundleFile(path string) ([]bundleObject, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objects []bundleObject
	for {
		var u unstructured.Unstructured
		if err := decoder.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		raw, err := yaml.Marshal(u.Object)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if err := validateBundleObject(u, raw); err != nil {
			return nil, fmt.Errorf("%s: %s %q: %w", path, u.GetKind(), u.GetName(), err)
		}
		gv := strings.Split(u.GetAPIVersion(), "/")
		objects = append(objects, bundleObject{
			apiVersion: gv[len(gv)-1],
			kind:       strings.ToLower(u.GetKind()),
			name:       u.GetName(),
			yaml:       raw,
		})
	}
	if len(objects) == 0 {
		return nil, fmt.Errorf("%s: no objects", path)
	}
	if len(objects) > bundle.MaximumBundleObjects {
		return nil, fmt.Errorf("%s: %d objects, a bundle holds at most %d", path, len(objects), bundle.MaximumBundleObjects)
	}
	return objects, nil
}

func validateBundleObject(u unstructured.Unstructured, raw []byte) error {
	if u.GetAPIVersion() != "tekton.dev/v1" {
		return fmt.Errorf("apiVersion %q, want tekton.dev/v1", u.GetAPIVersion())
	}
	ctx := apis.WithinCreate(context.Background())
	var errs *apis.FieldError
	switch u.GetKind() {
	case "Pipeline":
		var p pipelinev1.Pipeline
		if err := yaml.UnmarshalStrict(raw, &p); err != nil {
			return err
		}
		p.SetDefaults(ctx)
		errs = p.Validate(ctx)
	case "Task":
		var t pipelinev1.Task
		if err := yaml.UnmarshalStrict(raw, &t); err != nil {
			return err
		}
		t.SetDefaults(ctx)
		errs = t.Validate(ctx)
	default:
		return fmt.Errorf("kind %q, a bundle holds Pipelines and Tasks", u.GetKind())
	}
	if errs != nil {
		return errs
	}
	return nil
}

// bundleImage builds the image the bundles resolver reads: one layer per object, each a tar
// holding one file named after the object, annotated with the object's apiVersion, kind
// (lowercase, singular) and name — the layout `tkn bundle push` writes and
// pkg/resolution/resolver/bundle checks (checkImageCompliance, GetEntry).
func bundleImage(objects []bundleObject) (v1.Image, error) {
	img := empty.Image
	for _, obj := range objects {
		var buf bytes.Buffer
		w := tar.NewWriter(&buf)
		if err := w.WriteHeader(&tar.Header{
			Name:     obj.name,
			Mode:     0o600,
			Size:     int64(len(obj.yaml)),
			Typeflag: tar.TypeReg,
		}); err != nil {
			return nil, err
		}
		if _, err := w.Write(obj.yaml); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		layer, err := tarball.LayerFromReader(&buf)
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer: layer,
			Annotations: map[string]string{
				bundle.BundleAnnotationAPIVersion: obj.apiVersion,
				bundle.BundleAnnotationKind:       obj.kind,
				bundle.BundleAnnotationName:       obj.name,
			},
		})
		if err != nil {
			return nil, err
		}
	}
	return img, nil
}

// pushBundle pushes the bundle built from file to ref and returns the reference by digest.
// References to 127.0.0.1 are plain HTTP (go-containerregistry's name.Registry.Scheme), which is
// also how the bundles resolver reaches the loopback registry without any configuration.
func pushBundle(file, ref string) (string, error) {
	objects, err := readBundleFile(file)
	if err != nil {
		return "", err
	}
	img, err := bundleImage(objects)
	if err != nil {
		return "", fmt.Errorf("%s: building the image: %w", file, err)
	}
	tag, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	if err := remote.Write(tag, img); err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return "", err
	}
	return tag.Context().Digest(digest.String()).String(), nil
}
