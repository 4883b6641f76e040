# Terraform and provider versions. State lives in a GCS bucket made once by hand
# (docs/deploy.md, step 3): `terraform init -backend-config="bucket=<PROJECT_ID>-tfstate"`.
terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 7.0"
    }
  }

  backend "gcs" {
    prefix = "product-photo-detector"
  }
}

provider "google" {
  project               = var.project_id
  region                = var.region
  user_project_override = true # the budget API is billed to this project
  billing_project       = var.project_id
}

data "google_project" "this" {
  project_id = var.project_id
}
