# Service accounts, each with only what it needs, and no keys anywhere:
#   ppd-nodes  the nodes: write logs and metrics, pull images from the ppd repository
#   ppd-serve  Ray serving pods (KSAs ppd/ppd-serve, ppd/ppd-serve-worker): read models/
#   ppd-train  RayJob and MLflow pods (KSAs ppd/ppd-train, ppd/ppd-train-worker): read data/,
#              write ray_results/, models/ and mlflow/
#   ppd-ci     GitHub Actions of var.github_repository (Workload Identity Federation): push
#              images, reach the cluster's API (Kubernetes RBAC in k8s/namespace.yaml decides
#              what it may change, in namespace ppd only), read models/, write releases/
# Pods get their Google identity through GKE Workload Identity (k8s/namespace.yaml annotates
# the Kubernetes service accounts); CI through an OIDC federation limited to one repository's
# main branch. Bucket access goes by prefix (IAM conditions): serving cannot read data/ and
# training cannot overwrite releases/.
resource "google_service_account" "nodes" {
  account_id   = "ppd-nodes"
  display_name = "GKE nodes of the ppd cluster"
  depends_on   = [google_project_service.enabled]
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_artifact_registry_repository_iam_member" "nodes_pull" {
  location   = google_artifact_registry_repository.ppd.location
  repository = google_artifact_registry_repository.ppd.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_service_account" "serve" {
  account_id   = "ppd-serve"
  display_name = "Ray Serve pods of the ppd RayService"
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "train" {
  account_id   = "ppd-train"
  display_name = "Ray Train / Tune RayJobs and MLflow of ppd"
  depends_on   = [google_project_service.enabled]
}

# Who may touch which prefix of the bucket. objectViewer reads, objectUser reads, creates and
# overwrites (no IAM or bucket changes). An object's IAM resource name is
# projects/_/buckets/BUCKET/objects/NAME; a list request is checked against the bucket with the
# listed prefix as the objectListPrefix attribute, so both are matched.
locals {
  serve_member = "serviceAccount:${google_service_account.serve.email}"
  train_member = "serviceAccount:${google_service_account.train.email}"
  ci_member    = "serviceAccount:${google_service_account.ci.email}"
  bucket_prefix_grants = {
    serve-read-models   = { member = local.serve_member, role = "roles/storage.objectViewer", prefix = "models/" }
    train-read-data     = { member = local.train_member, role = "roles/storage.objectViewer", prefix = "data/" }
    train-write-results = { member = local.train_member, role = "roles/storage.objectUser", prefix = "ray_results/" }
    train-write-models  = { member = local.train_member, role = "roles/storage.objectUser", prefix = "models/" }
    train-write-mlflow  = { member = local.train_member, role = "roles/storage.objectUser", prefix = "mlflow/" }
    ci-read-models      = { member = local.ci_member, role = "roles/storage.objectViewer", prefix = "models/" }
    ci-write-releases   = { member = local.ci_member, role = "roles/storage.objectUser", prefix = "releases/" }
  }
}

resource "google_storage_bucket_iam_member" "prefix" {
  for_each = local.bucket_prefix_grants

  bucket = google_storage_bucket.ppd.name
  role   = each.value.role
  member = each.value.member
  condition {
    title       = each.key
    description = "objects under ${each.value.prefix} only"
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.ppd.name}/objects/${each.value.prefix}\") || api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${each.value.prefix}\")"
  }
}

# Kubernetes service account ppd/<name> may act as the Google service account. The heads'
# accounts keep an API token (the autoscaler sidecar scales pods with it); the workers' have
# none mounted (k8s/namespace.yaml) and reach GCS through the same Google identity.
resource "google_service_account_iam_member" "workload_identity" {
  for_each = {
    ppd-serve        = google_service_account.serve.name
    ppd-serve-worker = google_service_account.serve.name
    ppd-train        = google_service_account.train.name
    ppd-train-worker = google_service_account.train.name
  }
  service_account_id = each.value
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[ppd/${each.key}]"

  depends_on = [google_container_cluster.ppd] # the workload pool exists with the cluster
}

resource "google_service_account" "ci" {
  account_id   = "ppd-ci"
  display_name = "GitHub Actions of ${var.github_repository}"
  depends_on   = [google_project_service.enabled]
}

resource "google_artifact_registry_repository_iam_member" "ci_push" {
  location   = google_artifact_registry_repository.ppd.location
  repository = google_artifact_registry_repository.ppd.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.ci.email}"
}

# Enough to fetch cluster credentials (container.clusters.get) and no Kubernetes object at
# all: what CI may apply is granted by the Role ppd-deployer in namespace ppd only
# (k8s/namespace.yaml), which cannot read Secrets.
resource "google_project_iam_member" "ci_cluster" {
  project = var.project_id
  role    = "roles/container.clusterViewer"
  member  = "serviceAccount:${google_service_account.ci.email}"
}

resource "google_iam_workload_identity_pool" "github" {
  workload_identity_pool_id = "github"
  display_name              = "GitHub Actions"
  depends_on                = [google_project_service.enabled]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  # checkov:skip=CKV_GCP_125: the condition pins repository, owner id and ref to variables checkov cannot resolve (they have no default); tests/deploy/test_workload_identity.py evaluates it
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github-oidc"
  display_name                       = "GitHub OIDC"

  attribute_mapping = {
    "google.subject"       = "assertion.sub"
    "attribute.repository" = "assertion.repository"
    "attribute.ref"        = "assertion.ref"
  }
  # Only tokens of workflows of this repository (by name and by the owner's numeric id, which
  # a re-created account of the same name does not have) running on main are accepted. The
  # ref claim is checked, not sub: a job with `environment: production` gets the subject
  # repo:OWNER/REPO:environment:production, one without it repo:OWNER/REPO:ref:refs/heads/main,
  # and both carry ref. A job in another environment is refused. Pull requests (ref
  # refs/pull/N/merge) and other branches can run CI but never reach the project.
  attribute_condition = "assertion.repository == \"${var.github_repository}\" && assertion.repository_owner_id == \"${var.github_repository_owner_id}\" && assertion.ref == \"refs/heads/main\" && assertion.ref_type == \"branch\" && (!(\"environment\" in assertion) || assertion.environment == \"production\")"

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account_iam_member" "ci_federation" {
  service_account_id = google_service_account.ci.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository/${var.github_repository}"
}
