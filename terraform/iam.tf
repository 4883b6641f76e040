# Service accounts, each with only what it needs, and no keys anywhere:
#   ppd-nodes  the nodes: write logs and metrics, pull images from the ppd repository
#   ppd-serve  Ray serving pods (KSA ppd/ppd-serve): read the bucket (models, release record)
#   ppd-train  RayJob and MLflow pods (KSA ppd/ppd-train): read and write the bucket
#   ppd-ci     GitHub Actions of var.github_repository (Workload Identity Federation): push
#              images, deploy to the cluster, read and write the bucket (gate, release record)
# Pods get their Google identity through GKE Workload Identity (k8s/namespace.yaml annotates
# the Kubernetes service accounts); CI through an OIDC federation limited to one repository.
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

resource "google_storage_bucket_iam_member" "serve_read" {
  bucket = google_storage_bucket.ppd.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.serve.email}"
}

resource "google_service_account" "train" {
  account_id   = "ppd-train"
  display_name = "Ray Train / Tune RayJobs and MLflow of ppd"
  depends_on   = [google_project_service.enabled]
}

resource "google_storage_bucket_iam_member" "train_write" {
  bucket = google_storage_bucket.ppd.name
  role   = "roles/storage.objectUser" # read, create, overwrite; no IAM or bucket changes
  member = "serviceAccount:${google_service_account.train.email}"
}

# Kubernetes service account ppd/<name> may act as the Google service account.
resource "google_service_account_iam_member" "workload_identity" {
  for_each = {
    ppd-serve = google_service_account.serve.name
    ppd-train = google_service_account.train.name
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

resource "google_storage_bucket_iam_member" "ci_bucket" {
  bucket = google_storage_bucket.ppd.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.ci.email}"
}

resource "google_project_iam_member" "ci_deploy" {
  project = var.project_id
  role    = "roles/container.developer" # apply RayService/RayJob objects; no cluster admin
  member  = "serviceAccount:${google_service_account.ci.email}"
}

resource "google_iam_workload_identity_pool" "github" {
  workload_identity_pool_id = "github"
  display_name              = "GitHub Actions"
  depends_on                = [google_project_service.enabled]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  # checkov:skip=CKV_GCP_125: the condition pins sub to repo:<github_repository>:ref:refs/heads/main; checkov cannot resolve the variable (it has no default)
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github-oidc"
  display_name                       = "GitHub OIDC"

  attribute_mapping = {
    "google.subject"       = "assertion.sub"
    "attribute.repository" = "assertion.repository"
    "attribute.ref"        = "assertion.ref"
  }
  # Only tokens of workflows running on this repository's main branch are accepted at all:
  # pull requests (and forks) can run CI but never reach the project.
  attribute_condition = "assertion.sub == \"repo:${var.github_repository}:ref:refs/heads/main\""

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account_iam_member" "ci_federation" {
  service_account_id = google_service_account.ci.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository/${var.github_repository}"
}
