// Command reportcheck decodes ConformanceReport YAML files strictly into Gateway API's own
// types (sigs.k8s.io/gateway-api/conformance/apis/v1), so the suite's report cannot drift
// from upstream's shape: an unknown or misplaced field, a duplicate key or a value of the
// wrong type is an error, and so is a field upstream's tooling needs but strict decoding
// cannot demand (implementation, profile name and summary, results).
//
// Usage: reportcheck FILE... (exit 1 naming each file and its first problem).
package main

import (
	"errors"
	"fmt"
	"os"

	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: reportcheck FILE...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		if err := check(path); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
			continue
		}
		fmt.Printf("%s: a strict %s ConformanceReport\n", path, confv1.GroupVersion)
	}
	if failed {
		os.Exit(1)
	}
}

func check(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var report confv1.ConformanceReport
	if err := yaml.UnmarshalStrict(data, &report); err != nil {
		return fmt.Errorf("strict decoding into confv1.ConformanceReport: %w", err)
	}
	if got := report.APIVersion + " " + report.Kind; got != confv1.GroupVersion.String()+" ConformanceReport" {
		return fmt.Errorf("apiVersion and kind are %q, want %q", got, confv1.GroupVersion.String()+" ConformanceReport")
	}
	if err := report.Implementation.Validate(); err != nil {
		return err
	}
	if len(report.ProfileReports) == 0 {
		return errors.New("no profiles")
	}
	for i, profile := range report.ProfileReports {
		if profile.Name == "" || profile.Summary == "" {
			return fmt.Errorf("profiles[%d]: name %q and summary %q must both be set", i, profile.Name, profile.Summary)
		}
		if err := checkStatus(profile.Core); err != nil {
			return fmt.Errorf("profile %s core: %w", profile.Name, err)
		}
		if profile.Extended != nil {
			if err := checkStatus(profile.Extended.Status); err != nil {
				return fmt.Errorf("profile %s extended: %w", profile.Name, err)
			}
		}
	}
	return nil
}

// checkStatus applies upstream's rule (conformance/utils/suite/reports.go): failure when a test
// failed, else partial when one was skipped, else success; listed tests match the counts.
func checkStatus(s confv1.Status) error {
	want := confv1.Success
	if s.Failed > 0 {
		want = confv1.Failure
	} else if s.Skipped > 0 {
		want = confv1.Partial
	}
	if s.Result != want {
		return fmt.Errorf("result %q, but statistics %+v make it %q", s.Result, s.Statistics, want)
	}
	if len(s.FailedTests) != int(s.Failed) || len(s.SkippedTests) != int(s.Skipped) {
		return fmt.Errorf("%d failedTests and %d skippedTests listed, statistics say %+v",
			len(s.FailedTests), len(s.SkippedTests), s.Statistics)
	}
	return nil
}
