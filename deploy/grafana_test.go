package deploy_test

import (
	"os"
	"testing"

	"go.yaml.in/yaml/v3"
)

// provisionedDatasource is one entry of a Grafana datasource provisioning
// file.
type provisionedDatasource struct {
	Name     string `yaml:"name"`
	UID      string `yaml:"uid"`
	Type     string `yaml:"type"`
	Access   string `yaml:"access"`
	URL      string `yaml:"url"`
	JSONData struct {
		TSDBVersion    int `yaml:"tsdbVersion"`
		TSDBResolution int `yaml:"tsdbResolution"`
	} `yaml:"jsonData"`
}

// readDatasource returns the one data source the stack provisions.
func readDatasource(t *testing.T) provisionedDatasource {
	t.Helper()
	data, err := os.ReadFile(datasourceFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		APIVersion  int                     `yaml:"apiVersion"`
		Datasources []provisionedDatasource `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", datasourceFile, err)
	}
	if f.APIVersion != 1 || len(f.Datasources) != 1 {
		t.Fatalf("%s: apiVersion %d with %d data sources, want apiVersion 1 with one", datasourceFile, f.APIVersion, len(f.Datasources))
	}
	return f.Datasources[0]
}

// TestGrafanaDatasource: Grafana reads the OpenTSDB the evaluators write
// to, through its server (the service name resolves only on the compose
// network), with the version setting "==2.3", which its settings page
// offers and OpenTSDB 2.4, which the image runs, answers.
func TestGrafanaDatasource(t *testing.T) {
	ds := readDatasource(t)
	cfg := loadConfig(t, stackConfigDir)
	c := readCompose(t)
	if ds.Type != "opentsdb" {
		t.Errorf("type %q, want opentsdb", ds.Type)
	}
	if ds.UID == "" {
		t.Errorf("no uid: the dashboard refers to its data source by uid")
	}
	if ds.URL != cfg.TSDB.URL {
		t.Errorf("url %q, but the evaluators write to %q", ds.URL, cfg.TSDB.URL)
	}
	if host, _ := urlHostPort(t, ds.URL); !c.resolves(host) {
		t.Errorf("url %q: %s is no service of %s", ds.URL, host, composeFile)
	}
	if ds.Access != "proxy" {
		t.Errorf("access %q, want proxy: the browser cannot resolve compose service names", ds.Access)
	}
	// Grafana's settings page offers 1 (<=2.1), 2 (==2.2) and 3 (==2.3)
	// and shows any other value as "<=2.1"; 3 sends showQuery and maps
	// answers to queries by its index, which OpenTSDB 2.4 answers.
	if ds.JSONData.TSDBVersion != 3 {
		t.Errorf("jsonData.tsdbVersion %d, want 3 (\"==2.3\", the newest Grafana's settings offer)", ds.JSONData.TSDBVersion)
	}
	if r := ds.JSONData.TSDBResolution; r != 1 && r != 2 {
		t.Errorf("jsonData.tsdbResolution %d, want 1 (second) or 2 (millisecond)", r)
	}
}

// TestGrafanaDashboardProvisioning follows the paths Grafana is given
// through the compose mounts to the repository: the provider's directory
// holds the dashboard, and the home dashboard is that file.
func TestGrafanaDashboardProvisioning(t *testing.T) {
	data, err := os.ReadFile(providerFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", providerFile, err)
	}
	if f.APIVersion != 1 || len(f.Providers) != 1 || f.Providers[0].Type != "file" {
		t.Fatalf("%s: want apiVersion 1 and one provider of type file", providerFile)
	}
	grafana, ok := readCompose(t).Services["grafana"]
	if !ok {
		t.Fatalf("%s has no grafana service", composeFile)
	}
	for what, containerPath := range map[string]string{
		"the provisioning directory":           "/etc/grafana/provisioning/datasources/opentsdb.yaml",
		"provider " + f.Providers[0].Name:      f.Providers[0].Options.Path + "/dmonitor.json",
		"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD": grafana.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"],
	} {
		host, ok := grafana.hostPath(t, containerPath)
		if !ok {
			t.Errorf("%s: %s is not mounted into the grafana container", what, containerPath)
			continue
		}
		if _, err := os.Stat(host); err != nil {
			t.Errorf("%s: %s is %s in the repository: %v", what, containerPath, host, err)
		}
	}
}
