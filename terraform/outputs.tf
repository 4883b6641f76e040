output "cluster_name" {
  description = "Name of the GKE cluster."
  value       = google_container_cluster.ppd.name
}

output "cluster_location" {
  description = "Zone of the GKE cluster (for gcloud container clusters get-credentials --location)."
  value       = google_container_cluster.ppd.location
}

output "bucket_name" {
  description = "The GCS bucket (export BUCKET=$(terraform output -raw bucket_name))."
  value       = google_storage_bucket.ppd.name
}

output "registry" {
  description = "Artifact Registry path that images are pushed to: <registry>/ppd-cpu and <registry>/ppd-gpu."
  value       = "${google_artifact_registry_repository.ppd.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.ppd.repository_id}"
}

output "ingress_ip" {
  description = "The static IP of the HTTPS endpoint (point your domain's A record here)."
  value       = google_compute_global_address.ingress.address
}

output "serve_service_account" {
  description = "Google service account of the serving pods."
  value       = google_service_account.serve.email
}

output "train_service_account" {
  description = "Google service account of the training pods and MLflow."
  value       = google_service_account.train.email
}

output "ci_service_account" {
  description = "Google service account GitHub Actions impersonate (secret GCP_SERVICE_ACCOUNT)."
  value       = google_service_account.ci.email
}

output "workload_identity_provider" {
  description = "Full name of the GitHub OIDC provider (secret GCP_WORKLOAD_IDENTITY_PROVIDER)."
  value       = google_iam_workload_identity_pool_provider.github.name
}
